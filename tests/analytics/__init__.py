"""Analytics: the SQL on both backends, and the API on runs made through it."""
