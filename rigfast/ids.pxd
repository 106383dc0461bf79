# C types of rigfast/ids.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its functions' locals.
cimport cython


cdef class _Pool:
    cdef public str text
    cdef public Py_ssize_t pos, width

    @cython.locals(i=Py_ssize_t, text=str)
    cpdef str take(self)
    cpdef str fill(self)


cdef class _TokenPool(_Pool):
    cpdef str fill(self)


cdef class _UuidPool(_Pool):
    @cython.locals(n=Py_ssize_t)
    cpdef str fill(self)


@cython.locals(p=_Pool)
cpdef str random_token()
@cython.locals(p=_Pool)
cpdef str random_uuid4()
