"""HTTP: routes, wire schemas and error mapping. Thin: it validates, calls the engine and the store,
and shapes responses."""
