"""Accuracy measured like a monitoring customer would: simulated stations, ground truth, a scorer.

``simulate`` writes station recordings with exact truth; ``score`` compares play events with that
truth; ``plot`` draws one station's timeline; ``collect`` reads a daemon's events off Kafka for the
scorer (bench/accuracy.sh runs it all). See docs/accuracy.md.
"""
