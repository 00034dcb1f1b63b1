"""A bare Litestar app, the bench's measure of what the framework alone takes to start under granian."""

from litestar import Litestar, get


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def build() -> Litestar:
    return Litestar([health])
