"""`keep` expressions: DuckDB SQL over stored scores (stage filter, `vidprep refilter`).

    keep.py  parsed and checked by DuckDB, split into conditions, evaluated on Arrow tables
"""
