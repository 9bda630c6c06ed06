"""Accounts and devices (PROTOCOL.md §3.1)."""

from cornice import Service
from pyramid.httpexceptions import HTTPNoContent

from ..encoding import b64encode
from ..errors import json_error
from ..ratelimit import rate_limited
from ..schemas.accounts import AddDeviceSchema, CreateAccountSchema, RotateKeySchema
from ..schemas.responses import DeviceListBody, KeyBody, NewDeviceBody, responses
from ..schemas.types import OPAQUE_ID, USER_ID
from ..security import DEVICE
from ..services import accounts
from . import validation

accounts_service = Service(
    name="accounts", path="/v1/accounts", description="Create an account with its first device"
)
devices_service = Service(
    name="devices", path="/v1/devices", description="Add a device to the caller's user"
)
user_devices = Service(
    name="user_devices",
    path="/v1/users/{user}/devices",
    description="A user's devices and their public keys",
)
device_key = Service(
    name="device_key",
    path="/v1/devices/{device_id}/key",
    description="Replace a device's public key",
)
device = Service(name="device", path="/v1/devices/{device_id}", description="Revoke a device")


@accounts_service.post(
    schema=CreateAccountSchema(),
    validators=(rate_limited("register"), validation.body),
    response_schemas=responses(
        201, NewDeviceBody, "The account's first device", (400, 403, 409, 413)
    ),
)
def create_account(request):
    if request.registry.fxchat.registration != "open":
        raise json_error(
            403,
            name="registration",
            location="server",
            description="registration is closed on this server",
        )
    created = accounts.create_account(
        request.dbsession,
        request.validated["user"],
        request.validated["public_key"],
        request.validated["name"],
        now=request.now,
    )
    request.response.status_code = 201
    return created.as_json()


@devices_service.post(
    schema=AddDeviceSchema(),
    permission=DEVICE,
    validators=(rate_limited("keys"), validation.body),
    response_schemas=responses(
        201, NewDeviceBody, "A new device of the caller's user", (400, 401, 409, 413)
    ),
)
def add_device(request):
    created = accounts.add_device(
        request.dbsession,
        request.identity,
        request.validated["public_key"],
        request.validated["name"],
        now=request.now,
        max_devices=request.registry.fxchat.max_devices_per_user,
    )
    request.response.status_code = 201
    return created.as_json()


@user_devices.get(
    permission=DEVICE,
    validators=(rate_limited("keys"), validation.path_matches(user=USER_ID)),
    response_schemas=responses(200, DeviceListBody, "The user's active devices", (401, 404)),
)
def list_devices(request):
    user, devices = accounts.list_devices(request.dbsession, request.matchdict["user"])
    return {
        "user": user.user_id,
        "devices": [
            {
                "device_id": d.device_id,
                "public_key": b64encode(d.public_key),
                "created_at": d.created_at,
            }
            for d in devices
        ],
    }


@device_key.put(
    schema=RotateKeySchema(),
    permission=DEVICE,
    validators=(
        rate_limited("keys"),
        validation.path_matches(device_id=OPAQUE_ID),
        validation.body,
    ),
    response_schemas=responses(200, KeyBody, "The device's new key", (400, 401, 403, 404, 413)),
)
def rotate_key(request):
    rotated = accounts.rotate_key(
        request.dbsession,
        request.identity,
        request.matchdict["device_id"],
        request.validated["public_key"],
        now=request.now,
    )
    return {"device_id": rotated.device_id, "public_key": b64encode(rotated.public_key)}


@device.delete(
    permission=DEVICE,
    validators=(rate_limited("keys"), validation.path_matches(device_id=OPAQUE_ID)),
    response_schemas=responses(204, None, "Revoked; its queue is dropped", (401, 404)),
)
def revoke_device(request):
    accounts.revoke_device(
        request.dbsession, request.identity, request.matchdict["device_id"], now=request.now
    )
    return HTTPNoContent()
