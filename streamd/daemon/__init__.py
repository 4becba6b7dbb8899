"""The recognition daemon: Kafka in → per-stream buffers → batched hash model → store lookup →
play events out. :mod:`.pipeline` is the Kafka-free core (also used by ``streamd recognize``),
:mod:`.runner` the consumer-group loop, :mod:`.state` the hand-over of open plays between owners."""
