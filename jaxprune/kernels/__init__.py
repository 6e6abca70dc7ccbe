"""Numerical kernels (pure-JAX references and accelerator kernels) used by jaxprune."""
