"""Schemas of accounts and devices (PROTOCOL.md §3.1)."""

import colander

from .types import DeviceName, PublicKey, UserId


class CreateAccountSchema(colander.MappingSchema):
    user = UserId()
    public_key = PublicKey()
    name = DeviceName()


class AddDeviceSchema(colander.MappingSchema):
    public_key = PublicKey()
    name = DeviceName()


class RotateKeySchema(colander.MappingSchema):
    public_key = PublicKey()
