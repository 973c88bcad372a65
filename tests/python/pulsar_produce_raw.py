"""Publishes prepared messages with the official Apache Pulsar Python client.

Usage: pulsar_produce_raw.py URL TOPIC FILE

FILE has one message per line: `KEY HEX-PAYLOAD`. The first half is sent
one message at a time (no batching), the rest in batches of up to 50, so a
reader sees both plain and batched entries; the batched half is split into
five runs, uncompressed and compressed with each codec the client offers
(LZ4, ZLib, ZSTD, Snappy). Each producer is flushed before the next starts,
which keeps every key's messages in order.
"""

import sys

import pulsar


def main():
    url, topic, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path) as f:
        messages = [line.split() for line in f if line.strip()]
    half = len(messages) // 2
    client = pulsar.Client(url, operation_timeout_seconds=20)
    failures = []

    def done(result, _msg_id):
        if result != pulsar.Result.Ok:
            failures.append(result)

    plain = client.create_producer(topic, batching_enabled=False,
                                   max_pending_messages=5000, block_if_queue_full=True)
    for key, payload in messages[:half]:
        plain.send_async(bytes.fromhex(payload), done, partition_key=key)
    plain.flush()
    plain.close()
    codecs = [pulsar.CompressionType.NONE, pulsar.CompressionType.LZ4,
              pulsar.CompressionType.ZLib, pulsar.CompressionType.ZSTD,
              pulsar.CompressionType.SNAPPY]
    rest = messages[half:]
    run = -(-len(rest) // len(codecs))
    for i, codec in enumerate(codecs):
        batched = client.create_producer(topic, batching_enabled=True,
                                         batching_max_messages=50,
                                         batching_max_publish_delay_ms=5,
                                         compression_type=codec,
                                         max_pending_messages=5000, block_if_queue_full=True)
        for key, payload in rest[i * run:(i + 1) * run]:
            batched.send_async(bytes.fromhex(payload), done, partition_key=key)
        batched.flush()
        batched.close()
    client.close()
    if failures:
        print("FAILED: %d sends: %s" % (len(failures), failures[:3]), file=sys.stderr)
        sys.exit(1)
    print("sent %d messages (%d unbatched, %d batched)" % (len(messages), half, len(messages) - half))


if __name__ == "__main__":
    main()
