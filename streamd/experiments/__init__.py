"""Reproductions of the seed paper's experiments (He, §4, Figs. 4-6) on streamd's data and model.

- ``runner``: the suite behind ``streamd experiments`` (Fig. 4 recurrent units, Fig. 5 feature
  maps, Fig. 6 hash layer vs hashing baselines, code length vs identification);
- ``features``: frozen-trunk features of training views, catalogs and degraded queries, computed
  once and shared by every variant;
- ``heads``: training a hash head (or only a hash layer) on those features;
- ``metrics``: mAP, precision@k, identification top-1;
- ``ksh``, ``itq``, ``lsh``: the hashing baselines;
- ``plots``: the PNG figures.

See docs/experiments.md.
"""
