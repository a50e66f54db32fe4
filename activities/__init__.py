"""Activity function blueprints (Azure Functions v2 programming model)."""
