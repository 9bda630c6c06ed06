"""The OpenAPI (Swagger 2.0) document at /v1/__api__, generated from the Cornice services.

cornice_swagger walks the services and their colander schemas; this module
teaches it our own colander types and binds the schemas to the running
server's settings, so that the document states the limits actually enforced.
"""

from __future__ import annotations

import colander
from cornice import Service
from cornice.service import get_services
from cornice_swagger import CorniceSwagger
from cornice_swagger.converters.schema import IntegerTypeConverter, StringTypeConverter

from .schemas.responses import response
from .schemas.types import Base64Url, QueryInt, StrictInt, StrictString
from .views import validation

api = Service(name="openapi", path="/v1/__api__", description="This API's OpenAPI document")


# The last character of canonical base64url carries zero bits in its tail.
_ANY = "[A-Za-z0-9_-]"
_TAIL_1 = "[AQgw]"  # after 2 characters: 1 byte
_TAIL_2 = "[AEIMQUYcgkosw048]"  # after 3 characters: 2 bytes


def base64url_pattern(length: int | None) -> str:
    """A regex for exactly the canonical base64url encodings of ``length`` bytes (any if None)."""
    if length is None:
        return f"^(?:{_ANY}{{4}})*(?:{_ANY}{_TAIL_1}|{_ANY}{{2}}{_TAIL_2})?$"
    groups, rest = divmod(length, 3)
    tail = {0: "", 1: f"{_ANY}{_TAIL_1}", 2: f"{_ANY}{{2}}{_TAIL_2}"}[rest]
    return f"^{_ANY}{{{groups * 4}}}{tail}$"


def encoded_length(size: int) -> int:
    return (size * 4 + 2) // 3


class NullableWhenOptional:
    """Optional fields also accept JSON null, meaning absent (see schemas.types)."""

    def convert_type(self, schema_node):
        converted = super().convert_type(schema_node)
        if schema_node.missing is not colander.required:
            converted["x-nullable"] = True
        return converted


class StrictStringConverter(NullableWhenOptional, StringTypeConverter):
    pass


class StrictIntConverter(NullableWhenOptional, IntegerTypeConverter):
    pass


class Base64UrlConverter(NullableWhenOptional, StringTypeConverter):
    def convert_type(self, schema_node):
        converted = super().convert_type(schema_node)
        converted["format"] = "base64url"
        length = schema_node.typ.length
        converted["pattern"] = base64url_pattern(length)
        if length is not None:
            converted["minLength"] = converted["maxLength"] = encoded_length(length)
        return converted

    def convert_validator(self, schema_node):
        # Length validators of these nodes count decoded bytes, not characters.
        validator = schema_node.validator
        if isinstance(validator, colander.Length):
            converted = {}
            if validator.min is not None:
                converted["minLength"] = encoded_length(validator.min)
            if validator.max is not None:
                converted["maxLength"] = encoded_length(validator.max)
            return converted
        return {}


class FxchatSwagger(CorniceSwagger):
    custom_type_converters = {
        Base64Url: Base64UrlConverter,
        StrictString: StrictStringConverter,
        StrictInt: StrictIntConverter,
        QueryInt: IntegerTypeConverter,
    }
    summary_docstrings = True

    def __init__(self, services, settings, **kwargs):
        super().__init__(services, **kwargs)
        self.settings = settings

    def _extract_operation_from_view(self, view, args):
        schema = args.get("schema")
        if schema is not None:
            schema = schema.bind(settings=self.settings)
            if validation.body in args.get("validators", ()):
                # Our body validator stands in for Cornice's: say where it looks.
                schema.name = "body"
                wrapper = colander.MappingSchema()
                wrapper.add(schema)
                schema = wrapper
            args = {**args, "schema": schema}
        operation = super()._extract_operation_from_view(view, args)
        if "204" in operation["responses"]:
            operation.pop("produces", None)  # nothing to produce
        for parameter in operation.get("parameters", ()):
            if parameter.get("in") == "body":
                parameter["required"] = True
        if args.get("permission"):
            operation["security"] = [{"bearer": []}]
        return operation


@api.get(response_schemas={"200": response(None, "An OpenAPI 2.0 (Swagger) document")})
def openapi_document(request):
    """This document."""
    registry = request.registry
    if "fxchat.openapi" not in registry:
        generator = FxchatSwagger(get_services(), registry.fxchat, pyramid_registry=registry)
        document = generator.generate(
            title="fxchat",
            version=registry["fxchat.version"]["version"],
            base_path="/",
            info={"description": "End-to-end-encrypted chat relay; see PROTOCOL.md"},
        )
        document["securityDefinitions"] = {
            "bearer": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "description": "Bearer <token>, as returned when the device was created",
            }
        }
        # Swagger 2.0 has no null; schemathesis reads this extension.
        page = document["paths"]["/v1/messages"]["get"]["responses"]["200"]["schema"]
        page["properties"]["next"]["x-nullable"] = True
        registry["fxchat.openapi"] = document
    return registry["fxchat.openapi"]


def includeme(config) -> None:
    config.include("cornice_swagger")
    config.add_cornice_service(api)
