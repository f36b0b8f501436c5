cdef class ConnectionTable:
    cdef dict _items
    cdef object _view

    cpdef add(self, str key, object value)
    cpdef object remove(self, str key)
    cpdef object get(self, str key, object default=*)
    cpdef list values(self)
    cpdef list keys(self)
