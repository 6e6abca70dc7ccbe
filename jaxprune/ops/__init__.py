"""Pure jnp math: norms, rotary embeddings, attention, causal conv, MLP activations, MoE."""
