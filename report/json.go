package report

import (
	"encoding/json"
	"io"
)

// WriteJSON writes the report as one indented JSON document in the
// authgate.report/v1 schema (SCHEMA.md). Keys are never renamed; new keys
// may be added.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
