# C types of rigfast/auth/authorizer.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the authorizer's attributes and its per-request calls.
cimport cython


@cython.final
cdef class Authorizer:
    cdef public object verifier, blacklist, subscription_check, submission_check, rate_limiter, client_limiter
    cdef public bint submissions_open

    cpdef list tokens(self, req)
    cpdef check_submission(self, list tokens, event_json)
