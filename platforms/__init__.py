"""Board glue and build flows for the ECP5 (ULX3S 85F) and iCE40 (iCEBreaker) boards:
``platforms.boards`` (the board registry and tops), ``platforms.pll`` (PLL settings)."""

__all__ = ["boards", "pll"]
