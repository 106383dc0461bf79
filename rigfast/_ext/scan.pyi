from typing import Any, Callable, Iterable

class RecordEvent:
    type: str
    id: str
    json: bytes
    keys: dict | None
    seq: int
    rid: str
    obj: Any
    def __init__(self, type: str, id: str, json: bytes, rid: str = ..., keys: dict | None = ...) -> None: ...

def scan(value: bytes) -> RecordEvent | None: ...
def extract(value: bytes, paths: Iterable[tuple[str, tuple[str, ...]]], canon: Callable[[bytes], Any]) -> dict: ...
def scan_records(msgs: list, fallback: Callable[[Any], Any]) -> list: ...
