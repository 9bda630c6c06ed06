"""The request class: every request method and property of the configuration, built once.

``config.add_request_method`` (fxchat's ``now``, ``dbsession`` and
``client_address``, pyramid_tm's ``tm``, Cornice's ``current_service``)
makes Pyramid's router give each request its properties by building a new
subclass of the request class for it: a ``type()`` call per request, about
a tenth of the CPU of a request that does little else. The same methods
and descriptors, set once on one subclass that serves as the request
factory, behave the same (a reified value is still kept per request).
"""

from __future__ import annotations

from pyramid.config import Configurator
from pyramid.interfaces import IRequestExtensions, IRequestFactory
from pyramid.request import Request


def bake_request_extensions(config: Configurator) -> None:
    """Move the registered request extensions onto the request factory's class.

    Call it once every ``add_request_method`` has run: it commits the
    configuration, and one added later would be applied per request again.
    """
    config.commit()
    registry = config.registry
    extensions = registry.queryUtility(IRequestExtensions)
    if extensions is None:
        return
    factory = registry.queryUtility(IRequestFactory, default=Request)
    if not (isinstance(factory, type) and issubclass(factory, Request)):
        raise TypeError(f"cannot add request methods to the request factory {factory!r}")
    baked = type(
        factory.__name__,
        (factory,),
        {
            "__module__": factory.__module__,
            "__doc__": factory.__doc__,
            **extensions.methods,
            **extensions.descriptors,
        },
    )
    registry.registerUtility(baked, IRequestFactory)
    # The router reads this when it is made: with none, it applies nothing
    # per request. pyramid.scripting.prepare() copes with none as well.
    registry.unregisterUtility(provided=IRequestExtensions)
