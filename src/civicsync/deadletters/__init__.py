"""Dead letters: keys whose change could not be applied, held per key and replayed from the source
(batch and CDC flows alike)."""
