"""Mux.Cool: many streams over one VMess (or VLESS) connection, V2Ray 4.34 compatible."""
