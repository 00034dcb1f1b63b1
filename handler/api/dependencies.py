"""Dependency providers: the handlers' view of the state the lifespan owns.

Handlers annotate these with the `*Dep` aliases: the objects are ours, already built, so Litestar
must not try to validate them field by field as it does request data.
"""

from __future__ import annotations

from typing import Annotated

from litestar.datastructures import State
from litestar.params import Dependency

from handler.engine.cache import ModelCache
from handler.lifecycle import Lifecycle
from handler.settings import Settings
from handler.store.catalog import ModelCatalog
from handler.store.sync import ModelStore
from handler.warmup import WarmUp


def provide_settings(state: State) -> Settings:
    return state.settings


def provide_catalog(state: State) -> ModelCatalog:
    return state.catalog


def provide_cache(state: State) -> ModelCache:
    return state.model_cache


def provide_store(state: State) -> ModelStore:
    return state.model_store


def provide_lifecycle(state: State) -> Lifecycle:
    return state.lifecycle


def provide_warmup(state: State) -> WarmUp:
    return state.warmup


DEPENDENCIES = {"settings": provide_settings, "catalog": provide_catalog, "cache": provide_cache,
                "store": provide_store, "lifecycle": provide_lifecycle, "warmup": provide_warmup}


SettingsDep = Annotated[Settings, Dependency(skip_validation=True)]
CatalogDep = Annotated[ModelCatalog, Dependency(skip_validation=True)]
CacheDep = Annotated[ModelCache, Dependency(skip_validation=True)]
StoreDep = Annotated[ModelStore, Dependency(skip_validation=True)]
LifecycleDep = Annotated[Lifecycle, Dependency(skip_validation=True)]
WarmUpDep = Annotated[WarmUp, Dependency(skip_validation=True)]
