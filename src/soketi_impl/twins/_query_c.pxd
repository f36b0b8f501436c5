# The query twin's C-level entry for the other compiled twins (``_trigger_c``).

cpdef tuple sdk_query(str query)
