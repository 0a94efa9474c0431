package relay
import ("testing";"unsafe")
func TestSizes(t *testing.T){ t.Logf("Conn %d pump %d side %d fr %d", unsafe.Sizeof(Conn{}), unsafe.Sizeof(pump{}), unsafe.Sizeof(side{}), unsafe.Sizeof(frameReader{})) }
