"""Nemotron Elastic: nested submodels of one parent, a router choosing each budget's
architecture, and multi-budget distillation (:mod:`jaxprune.elastic.permute`, ``space``,
``masks``, ``budget``, ``router``)."""
