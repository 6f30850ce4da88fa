"""DiffIR-HDR: BasicSR-style training of DiffIR for LDR→HDR restoration (inverse tone mapping)."""
__version__ = "0.1.0"
