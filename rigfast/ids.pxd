# C types of rigfast/ids.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its functions' locals.
cimport cython


cdef class _Pool:
    cdef public str text
    cdef public Py_ssize_t pos


@cython.locals(p=_Pool, i=Py_ssize_t, text=str)
cpdef str random_token()
@cython.locals(p=_Pool, i=Py_ssize_t, n=Py_ssize_t, text=str)
cpdef str random_uuid4()
