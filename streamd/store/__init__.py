"""The code store: catalogs in Redis (catalog), in-process replicas (replica, table), Hamming
search (search: exact; mih: multi-index hashing). See docs/store.md."""

from streamd.store.catalog import Catalog, CatalogError, Track, connect, list_catalogs
from streamd.store.replica import Replica
from streamd.store.table import CodeTable, Hits, SearchSettings

__all__ = ["Catalog", "CatalogError", "CodeTable", "Hits", "Replica", "SearchSettings", "Track", "connect",
           "list_catalogs"]
