"""The official Apache Pulsar Python client against Weir's test broker.

Usage: pulsar_client_check.py URL TOPIC

Produces batched and unbatched messages to a partitioned topic, consumes
them on a durable subscription, checks redelivery of what was not
acknowledged, reads from an exact message id, and seeks. Exits non-zero
(with the reason) if anything differs from what a Pulsar broker does.
"""

import sys
import pulsar


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def main():
    url, topic = sys.argv[1], sys.argv[2]
    client = pulsar.Client(url, operation_timeout_seconds=10)

    # 100 messages in batches, 100 one by one, each keyed.
    batched = client.create_producer(topic, batching_enabled=True,
                                     batching_max_messages=10,
                                     batching_max_publish_delay_ms=5)
    for i in range(100):
        batched.send_async(("b-%03d" % i).encode(), None, partition_key="k%d" % (i % 7))
    batched.flush()
    single = client.create_producer(topic, batching_enabled=False)
    ids = {}
    for i in range(100):
        ids["s-%03d" % i] = single.send(("s-%03d" % i).encode(), partition_key="k%d" % (i % 7))
    check(len(set(str(m) for m in ids.values())) == 100, "distinct message ids")

    # Everything arrives on a durable subscription, each partition in order.
    consumer = client.subscribe(topic, "check-sub",
                                consumer_type=pulsar.ConsumerType.Failover,
                                initial_position=pulsar.InitialPosition.Earliest)
    got = []
    for _ in range(200):
        msg = consumer.receive(timeout_millis=10000)
        got.append(msg)
    values = sorted(m.data().decode() for m in got)
    check(values == sorted(["b-%03d" % i for i in range(100)] + ["s-%03d" % i for i in range(100)]),
          "all 200 messages received once: %s" % values[:5])
    for key in range(7):
        order = [m.data().decode() for m in got if m.partition_key() == "k%d" % key]
        check(order == sorted(order, key=lambda s: (s[0] != "b", s)),
              "per-key order kept for k%d: %s" % (key, order))

    # Acknowledge only half; the rest comes back to a new consumer.
    acked = set()
    for m in got[:100]:
        consumer.acknowledge(m)
        acked.add(m.data().decode())
    consumer.close()
    again = client.subscribe(topic, "check-sub",
                             consumer_type=pulsar.ConsumerType.Failover)
    redelivered = set()
    while True:
        try:
            m = again.receive(timeout_millis=2000)
        except Exception:
            break
        redelivered.add(m.data().decode())
        again.acknowledge(m)
    expected = set(v for v in values if v not in acked)
    check(expected <= redelivered, "unacknowledged messages are redelivered (missing %s)"
          % sorted(expected - redelivered)[:5])
    check(not (redelivered & acked) or len(redelivered & acked) < 10,
          "acknowledged messages are mostly not redelivered")
    again.close()

    # A reader from an exact message id reads what follows it.
    first_partition = ids["s-000"].partition()
    start = ids["s-050"]
    part_topic = "%s-partition-%d" % (topic, start.partition()) if start.partition() >= 0 else topic
    reader = client.create_reader(part_topic, start)
    after = []
    while True:
        try:
            m = reader.read_next(timeout_millis=2000)
        except Exception:
            break
        after.append(m.data().decode())
    later_same_partition = [k for k, v in ids.items()
                            if v.partition() == start.partition() and k > "s-050"]
    check(set(later_same_partition) <= set(after),
          "reader from s-050 reads what follows (missing %s)"
          % sorted(set(later_same_partition) - set(after))[:5])
    check("s-050" not in after, "reader start is exclusive")
    reader.close()

    # Seek a subscription back to the beginning.
    seeker = client.subscribe(part_topic, "seek-sub",
                              initial_position=pulsar.InitialPosition.Latest)
    seeker.seek(pulsar.MessageId.earliest)
    seen = []
    while True:
        try:
            m = seeker.receive(timeout_millis=2000)
        except Exception:
            break
        seen.append(m.data().decode())
        seeker.acknowledge(m)
    check("s-050" in seen, "seek to earliest redelivers the partition (%d seen)" % len(seen))
    seeker.close()
    client.close()
    print("ok: %d messages, %d redelivered, %d read after s-050, %d after seek"
          % (len(values), len(redelivered), len(after), len(seen)))
    del first_partition


if __name__ == "__main__":
    main()
