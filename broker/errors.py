"""Error ladder. Only broker/client.py maps HTTP codes or status:error JSON into these.

BrokerError
 ├── TemporaryBrokerError      network trouble or 5xx on an idempotent read: retry with backoff
 │    ├── RateLimited          HTTP 429: the server refused before processing; back off
 │    └── OrderOutcomeUnknown  placeorder timed out / 5xx after sending: NEVER retried, reconcile instead
 ├── OrderRejected             terminal; the broker's message is kept
 ├── OrderNotFound             orderstatus/cancel for an id the book does not (yet) have
 ├── AuthError                 403 Invalid openalgo apikey: halt that account
 └── ConfigError               bad host URL etc.
Messages never contain the API key.
"""


class BrokerError(Exception):
    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TemporaryBrokerError(BrokerError):
    pass


class RateLimited(TemporaryBrokerError):
    pass


class OrderOutcomeUnknown(TemporaryBrokerError):
    pass


class OrderRejected(BrokerError):
    pass


class OrderNotFound(BrokerError):
    pass


class AuthError(BrokerError):
    pass


class ConfigError(BrokerError):
    pass
