# cython: language_level=3
"""Connection table, compiled twin of ``_conntable_py``.

A CPython dict is already the best hash table at hand; what this module removes
is the Python-level method dispatch around it: ``cpdef`` methods are direct C
calls from other Cython modules and cheap vectorcalls from Python.

Keys are any hashable object, with dict semantics (``1``, ``1.0`` and ``True`` are
one key), exactly as in the py twin: the seed's example uses numeric ids. An
``object`` parameter costs a str key nothing (a ``str`` one only added a type check).
"""

from cpython.dict cimport PyDict_Contains, PyDict_GetItemWithError, PyDict_SetItem
from types import MappingProxyType

from soketi_impl.errors import DuplicateConnection

__all__ = ["ConnectionTable"]


cdef class ConnectionTable:
    """A table of live connections keyed by their id."""

    def __cinit__(self):
        self._items = {}
        self._view = MappingProxyType(self._items)

    cpdef add(self, object key, object value):
        """Add ``value`` under ``key``; a key already present raises DuplicateConnection."""
        if PyDict_Contains(self._items, key):
            raise DuplicateConnection(f"connection id {key!r} is already tracked")
        PyDict_SetItem(self._items, key, value)

    cpdef object remove(self, object key):
        """Remove ``key`` and return its value, or None when it was not there."""
        return self._items.pop(key, None)

    cpdef object get(self, object key, object default=None):
        """The value under ``key``, or ``default``."""
        cdef object v
        # WithError: an unhashable key raises TypeError, as dict.get does in the py twin.
        cdef void* p = <void*>PyDict_GetItemWithError(self._items, key)
        if p is NULL:
            return default
        v = <object>p
        return v

    cpdef list values(self):
        """A snapshot list of the values."""
        return list(self._items.values())

    cpdef list keys(self):
        """A snapshot list of the keys."""
        return list(self._items)

    def mapping(self):
        """A read-only live view of the table."""
        return self._view

    def clear(self):
        """Remove everything."""
        self._items.clear()

    def __contains__(self, key):
        return key in self._items

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items.values()))
