package openflow

// CatalogCase exposes the builder catalog to the integration tests
// (package openflow_test).
type CatalogCase struct {
	Name  string
	Build *FlowBuilder
}

// ExportedCatalog returns the catalog's flows.
func ExportedCatalog() []CatalogCase {
	var out []CatalogCase
	for _, c := range catalog() {
		out = append(out, CatalogCase{c.name, c.build})
	}
	return out
}
