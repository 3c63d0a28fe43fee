"""HTTP resources (Klein): the JSON API of DESIGN section 4, errors and OpenAPI."""
