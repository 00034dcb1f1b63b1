"""Dependency providers: the handlers' view of the state the lifespan owns.

Handlers annotate these with the `*Dep` aliases: the objects are ours, already built, so Litestar
must not try to validate them field by field as it does request data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.datastructures import State
from litestar.params import SkipValidation

from handler.api.calls import ModelCalls
from handler.engine.cache import ModelCache
from handler.lifecycle import Lifecycle
from handler.settings import Settings
from handler.store.catalog import ModelCatalog
from handler.store.model_store import ModelStore
from handler.store.prefixes import PrefixStore
from handler.warmup import WarmUp

# Dependency name → the app state key the lifespan stores the object under.
STATE_KEYS = {"settings": "settings", "catalog": "catalog", "cache": "model_cache", "model_store": "model_store",
              "lifecycle": "lifecycle", "warmup": "warmup", "calls": "model_calls", "prefixes": "prefix_store"}


def _from_state(key: str) -> Callable[[State], Any]:
    def provide(state: State) -> Any:
        return state[key]

    return provide


DEPENDENCIES = {name: _from_state(key) for name, key in STATE_KEYS.items()}

SettingsDep = SkipValidation[Settings]
CatalogDep = SkipValidation[ModelCatalog]
CacheDep = SkipValidation[ModelCache]
StoreDep = SkipValidation[ModelStore]
LifecycleDep = SkipValidation[Lifecycle]
WarmUpDep = SkipValidation[WarmUp]
CallsDep = SkipValidation[ModelCalls]
PrefixesDep = SkipValidation[PrefixStore | None]
