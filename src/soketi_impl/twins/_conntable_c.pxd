cdef class ConnectionTable:
    cdef dict _items
    cdef object _view

    cpdef add(self, object key, object value)
    cpdef object remove(self, object key)
    cpdef object get(self, object key, object default=*)
    cpdef list values(self)
    cpdef list keys(self)
