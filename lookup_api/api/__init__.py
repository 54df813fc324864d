"""The HTTP surface: dependencies, errors and one module of routes per resource."""
