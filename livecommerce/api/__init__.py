"""The HTTP API: one module per resource, each parsing a request, calling the order
pipeline or the hub, and writing the answer; and its OpenAPI description."""
