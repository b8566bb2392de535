"""The JSON admin and device API under ``/api/v1`` (docs/devices.md, "The API").

``app`` builds the FastAPI application, its one error shape and its OpenAPI document;
``deps`` authenticates callers (admin tokens, device tokens); each other module is
one router for one kind of thing.
"""
