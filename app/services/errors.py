"""Errors a service raises for the UI to show. Codes map to ``error.<code>`` in i18n."""

from __future__ import annotations


class ServiceError(Exception):
    """Base: carries an i18n code and its parameters, never a pre-rendered message."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


class NotAuthenticated(ServiceError):
    def __init__(self) -> None:
        super().__init__("not_signed_in")


class NotFound(ServiceError):
    """Also raised for other users' rows, so that their existence does not leak."""

    def __init__(self) -> None:
        super().__init__("not_found")


class ValidationFailed(ServiceError):
    """One or more fields are wrong; ``field_errors`` maps field -> (code, params)."""

    def __init__(self, field_errors: dict[str, tuple[str, dict[str, object]]]) -> None:
        first_code = next(iter(field_errors.values()))[0] if field_errors else "invalid"
        super().__init__(first_code)
        self.field_errors = field_errors

    @classmethod
    def single(cls, field: str, code: str, **params: object) -> ValidationFailed:
        return cls({field: (code, params)})


class PermissionDenied(ServiceError):
    """The user is signed in but their role does not allow this."""

    def __init__(self) -> None:
        super().__init__("forbidden")
