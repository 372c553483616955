"""The HTTP API: routes, auth, error handlers, streaming and the request middleware."""
