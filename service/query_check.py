"""Unknown query parameters are refused (422 validation_error), as unknown body fields are: ``?lmit=5`` is a typo
the server must not read as "no limit". Each route's known names are those its dependencies declare, and those its
``openapi_extra`` documents (a parameter read from the query string by hand, as the scroll route's ``filter``)."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from hamdex.service.errors import ApiError

_ATTRIBUTE = "_hamdex_query_names"  # the names, cached on the route object (APIRoute is not hashable)


def known_query_names(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    stack: list[Dependant] = [route.dependant]
    while stack:
        dependant = stack.pop()
        names.update(param.alias for param in dependant.query_params)
        stack.extend(dependant.dependencies)
    extra = (route.openapi_extra or {}).get("parameters", [])
    names.update(param["name"] for param in extra if param.get("in") == "query")
    return frozenset(names)


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: 422 for a query parameter the matched route does not take."""
    if not request.url.query:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = getattr(route, _ATTRIBUTE, None)
    if known is None:
        known = known_query_names(route)
        setattr(route, _ATTRIBUTE, known)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ApiError("validation_error", f"unknown query parameters {unknown}; this route takes: {takes}")
