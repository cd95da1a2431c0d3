"""A consumer that takes one message and is then killed (by the test) before acking it.

Usage: python killed_consumer.py URL STREAM GROUP NAME. Prints the id of the message its
handler got, then waits in the handler for ever (the test sends SIGKILL).
"""

from __future__ import annotations

import sys
import threading

from sagaflow.brokers.redis import RedisConsumer
from sagaflow.messages import Message


def main() -> None:
    url, stream, group, name = sys.argv[1:5]

    def handler(message: Message) -> None:
        print(message.id, flush=True)
        threading.Event().wait()  # killed here, before the handler returns (no XACK)

    RedisConsumer(url, group, name, stream=stream, batch=1).consume(handler)


if __name__ == "__main__":
    main()
