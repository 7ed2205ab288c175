//! testkit: what every privileged test of layerscope reuses.
