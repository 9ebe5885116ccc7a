// The library's public exports, named explicitly.
