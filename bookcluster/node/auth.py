"""Who is asking: JWT bearer tokens, verified with PyJWT.

Every booking route acts for the token's `sub`; operator routes also need the
role `operator` in the token's `roles` claim. A `scanner` token (a theatre's door) also
names the theatres it may check in, in its `theatres` claim. HS256 tokens are checked with a
shared key (the local cluster generates one per run folder, `bookcluster token`
mints tokens with it); RS256/ES256 tokens from an identity provider are
checked with its public key. `exp` is required; `iss`/`aud` when configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from bookcluster.booking import ids
from bookcluster.errors import Forbidden, Unauthorized
from bookcluster.topology.model import Auth, Topology

OPERATOR = "operator"
SCANNER = "scanner"
VERIFIED_CACHE_SIZE = 50_000
LEEWAY_S = 5  # clock skew between the identity provider and our nodes


@dataclass(frozen=True)
class Identity:
    user: str
    roles: frozenset[str]
    theatres: frozenset[str] = frozenset()  # a scanner's: where it may check tickets in

    def require(self, role: str) -> None:
        if role not in self.roles:
            raise Forbidden(f"this route needs the {role!r} role")

    def require_theatre(self, theatre_id: str) -> None:
        """A scanner checks in only the tickets of the theatres its token names."""
        if theatre_id not in self.theatres:
            raise Forbidden(f"this scanner's token is not for theatre {theatre_id!r}",
                            reason="other_theatre", theatre_id=theatre_id)


def _hs256_key(auth: Auth, topology: Topology) -> str:
    """BOOKCLUSTER_JWT_SECRET overrides auth.secret_file, which overrides the run folder's."""
    return topology.secrets.get_with_file("jwt_secret", auth.secret_file)


class TokenVerifier:
    """Checks bearer tokens with the key chosen once, at start-up."""

    def __init__(self, topology: Topology) -> None:
        auth = topology.auth
        self._auth = auth
        if auth.algorithm == "HS256":
            self._key = _hs256_key(auth, topology)
        else:
            assert auth.public_key_file is not None  # topology validation requires it
            self._key = auth.public_key_file.read_text()
        self._options = {"require": ["exp", "sub"], "verify_aud": auth.audience is not None,
                         "verify_iss": auth.issuer is not None}
        # Verified tokens -> (caller, exp): a client sends the same token many times,
        # and checking its signature again costs ~40 us of every request.
        self._verified: dict[str, tuple[Identity, float]] = {}

    def known(self, authorization: str | None) -> bool:
        """Whether this header carries a token verified before and not expired (no work)."""
        if not authorization:
            return False
        known = self._verified.get(authorization.partition(" ")[2].strip())
        return known is not None and time.time() < known[1] + LEEWAY_S

    def identity(self, authorization: str | None) -> Identity:
        """The caller named by an `Authorization: Bearer <jwt>` header, or Unauthorized."""
        if not authorization:
            raise Unauthorized("this route needs Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        # A JWT is ASCII (base64url and dots); other bytes in the header would reach
        # PyJWT as undecodable text and fail outside its own error family.
        if scheme.lower() != "bearer" or not token.strip() or not token.isascii():
            raise Unauthorized("expected Authorization: Bearer <token>")
        token = token.strip()
        known = self._verified.get(token)
        if known is not None and time.time() < known[1] + LEEWAY_S:
            return known[0]
        caller, expires = self.verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but bounded: refilled by the next requests
        self._verified[token] = (caller, expires)
        return caller

    def verify(self, token: str) -> tuple[Identity, float]:
        """The token's caller and expiry, checking its signature and claims (no cache)."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[self._auth.algorithm],
                                audience=self._auth.audience, issuer=self._auth.issuer,
                                leeway=LEEWAY_S, options=self._options)  # type: ignore[arg-type]
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", reason="expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", reason="invalid") from None
        user, roles = claims.get("sub"), claims.get("roles", [])
        theatres = claims.get("theatres", [])
        if not isinstance(user, str) or not ids.USER_ID.match(user):
            raise Unauthorized("the token's sub is not a valid user id", reason="invalid")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("the token's roles claim must be a list of strings",
                               reason="invalid")
        if not isinstance(theatres, list) or not all(isinstance(t, str) for t in theatres):
            raise Unauthorized("the token's theatres claim must be a list of strings",
                               reason="invalid")
        return Identity(user, frozenset(roles), frozenset(theatres)), float(claims["exp"])


def mint(topology: Topology, user: str, ttl_s: float, roles: tuple[str, ...] = (),
         theatres: tuple[str, ...] = ()) -> str:
    """A token for `user` signed with the cluster's HS256 key (local clusters, tests, tools)."""
    auth = topology.auth
    if auth.algorithm != "HS256":
        raise ValueError(f"tokens for {auth.algorithm} come from the identity provider")
    if not ids.USER_ID.match(user):
        raise ValueError(f"user ids are 1-64 characters of [A-Za-z0-9_.@:-], got {user!r}")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "iat": now, "exp": now + int(ttl_s)}
    if roles:
        claims["roles"] = list(roles)
    if theatres:
        claims["theatres"] = list(theatres)
    if auth.issuer:
        claims["iss"] = auth.issuer
    if auth.audience:
        claims["aud"] = auth.audience
    return jwt.encode(claims, _hs256_key(auth, topology), algorithm="HS256")
