"""Arithmetic with a constant operand, in shifts and adders.

Yosys builds ``//`` by a constant as a whole divider and maps ``*`` by a constant onto a
multiplier block (MULT18X18D on the ECP5, SB_MAC16 on the iCE40), which the PE array needs.
"""

__all__ = ["reciprocal", "times"]


def reciprocal(cols: int, bits: int) -> tuple[int, int]:
    """``(mul, shift)`` with ``(x · mul) >> shift == x // cols`` for every ``bits``-bit ``x``
    (checked over all of them): the smallest exact shift, so the product is narrow."""
    for shift in range(bits, 2 * bits + cols.bit_length() + 2):
        mul = -(-(1 << shift) // cols)
        if all((x * mul) >> shift == x // cols for x in range(1 << bits)):
            return mul, shift
    raise AssertionError(f"no reciprocal of {cols} for {bits} bits")  # (there always is)


def times(x, k: int):
    """``x · k`` for a constant ``k >= 1`` as shifts and additions: a ``*`` would become a
    multiplier block (MULT18X18D on the ECP5), and the array needs those."""
    terms = [x << i for i in range(k.bit_length()) if k >> i & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total
