# The value of one hexadecimal digit (0-15), or -1: shared by frames.pyx (percent-decoding) and scan.pyx (\uXXXX).

cdef inline int hexval(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1
