"""The OpenAPI (Swagger 2.0) document at /v1/__api__, generated from the Cornice services.

cornice_swagger walks the services and their colander schemas; this module
teaches it our own colander types and binds the schemas to the running
server's settings, so that the document states the limits actually enforced.
"""

from __future__ import annotations

from cornice import Service
from cornice.service import get_services
from cornice_swagger import CorniceSwagger
from cornice_swagger.converters.schema import IntegerTypeConverter, StringTypeConverter

from .schemas.types import Base64Url, QueryInt, StrictInt, StrictString

api = Service(name="openapi", path="/v1/__api__", description="This API's OpenAPI document")


class Base64UrlConverter(StringTypeConverter):
    def convert_type(self, schema_node):
        converted = super().convert_type(schema_node)
        converted["pattern"] = "^[A-Za-z0-9_-]*$"
        converted["format"] = "base64url"
        length = schema_node.typ.length
        if length is not None:
            converted["minLength"] = converted["maxLength"] = (length * 4 + 2) // 3
        return converted

    def convert_validator(self, schema_node):
        # Length validators of these nodes count decoded bytes, not characters.
        return {}


class QueryIntConverter(StringTypeConverter):
    def convert_type(self, schema_node):
        converted = super().convert_type(schema_node)
        converted["type"] = "integer"
        return converted


class FxchatSwagger(CorniceSwagger):
    custom_type_converters = {
        Base64Url: Base64UrlConverter,
        StrictString: StringTypeConverter,
        StrictInt: IntegerTypeConverter,
        QueryInt: QueryIntConverter,
    }
    summary_docstrings = True

    def __init__(self, services, settings, **kwargs):
        super().__init__(services, **kwargs)
        self.settings = settings

    def _extract_operation_from_view(self, view, args):
        if args.get("schema") is not None:
            args = {**args, "schema": args["schema"].bind(settings=self.settings)}
        operation = super()._extract_operation_from_view(view, args)
        if args.get("permission"):
            operation["security"] = [{"bearer": []}]
        return operation


@api.get()
def openapi_document(request):
    """This document."""
    registry = request.registry
    if "fxchat.openapi" not in registry:
        generator = FxchatSwagger(get_services(), registry.fxchat, pyramid_registry=registry)
        document = generator.generate(
            title="fxchat", version=registry["fxchat.version"]["version"], base_path="/",
            info={"description": "End-to-end-encrypted chat relay; see PROTOCOL.md"})
        document["securityDefinitions"] = {
            "bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                       "description": "Bearer <token>, as returned when the device was created"}
        }
        registry["fxchat.openapi"] = document
    return registry["fxchat.openapi"]


def includeme(config) -> None:
    config.add_cornice_service(api)
