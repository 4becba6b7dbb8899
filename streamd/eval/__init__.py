"""Accuracy measured like a monitoring customer would: simulated stations, ground truth, a scorer.

``simulate`` writes station recordings with exact truth; ``score`` compares play events with that
truth; ``plot`` draws one station's timeline. See docs/accuracy.md.
"""
