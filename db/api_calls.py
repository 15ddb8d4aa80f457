"""Acting calls of the local API, exactly once per idempotency key.

``once`` runs in one write transaction: look up (API key, idempotency key); a hit returns the first answer and
writes nothing; a miss carries out the call (``act`` writes command rows with the same db functions the pages use)
and stores its answer, both committed together. So a retried call can never write twice, and a call that failed
validation (CommandError: nothing written) leaves no record, so it can be sent again corrected. The command rows
also carry keys derived from the idempotency key (``derived_key``), so they are idempotent on their own too.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from db import Database
from db.commands import CommandError
from db.models import ApiRequest

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class IdempotencyConflict(CommandError):
    """The idempotency key was used before for a different request."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict
    replayed: bool = False


def check_key(key) -> str:
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key):
        raise CommandError("Every acting call needs an idempotency key (header 'Idempotency-Key' or field "
                           "'idempotency_key'): 1-64 characters, letters, digits, '_', '-', '.' or ':'")
    return key


def derived_key(api_key_id: int, idempotency_key: str, *parts) -> str:
    """32 hex characters that depend only on the call: an execute key, a client_order_id."""
    text = ":".join(map(str, ("api", api_key_id, idempotency_key, *parts)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_hash(endpoint: str, request: dict) -> str:
    return hashlib.sha256(json.dumps([endpoint, request], sort_keys=True, default=str).encode()).hexdigest()


def once(db: Database, api_key_id: int, idempotency_key: str, endpoint: str, request: dict,
         act: Callable[[object], dict]) -> Answer:
    """Carry out ``act(session)`` once for (api_key_id, idempotency_key); see the module docstring. Raises
    CommandError (nothing written) and IdempotencyConflict (the key was used for another endpoint or body)."""
    key = check_key(idempotency_key)
    digest = request_hash(endpoint, request)
    with db.write() as s:
        prev = s.scalar(select(ApiRequest).where(ApiRequest.api_key_id == api_key_id,
                                                 ApiRequest.idempotency_key == key))
        if prev is not None:
            if prev.request_hash != digest:
                raise IdempotencyConflict(f"Idempotency key '{key}' was already used for a different request "
                                          f"({prev.endpoint}); nothing was done")
            return Answer(prev.status_code, json.loads(prev.response_json), replayed=True)
        body = {"status": "success", "data": act(s)}
        s.add(ApiRequest(api_key_id=api_key_id, idempotency_key=key, endpoint=endpoint[:128], request_hash=digest,
                         status_code=200, response_json=json.dumps(body, default=str)))
        return Answer(200, body)
