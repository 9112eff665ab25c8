package volume

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// fat is a FAT12, FAT16 or FAT32 volume, laid out as Microsoft's FAT
// specification (fatgen103) describes.
type fat struct {
	v           *bounded
	typ         string
	clusterSize int
	maxCluster  uint32 // highest valid cluster number
	fatOffset   int64  // the first FAT
	dataOffset  int64  // cluster 2
	rootOffset  int64  // FAT12/16: the fixed root directory
	rootSize    int    // FAT12/16: its size in bytes
	rootCluster uint32 // FAT32: the root directory's first cluster
	bootLabel   string
	entryBits   int
	endOfChain  uint32 // cluster values at or above this end a chain
	badCluster  uint32
}

func openFAT(v *bounded) (*fat, error) {
	bs, err := v.read(0, 512)
	if err != nil || bs[510] != 0x55 || bs[511] != 0xAA {
		return nil, errNotThisFormat
	}
	bytesPerSector := int64(le16(bs[11:]))
	sectorsPerCluster := int64(bs[13])
	reserved := int64(le16(bs[14:]))
	numFATs := int64(bs[16])
	rootEntries := int64(le16(bs[17:]))
	totalSectors := int64(le16(bs[19:]))
	if totalSectors == 0 {
		totalSectors = int64(le32(bs[32:]))
	}
	fatSectors := int64(le16(bs[22:]))
	if fatSectors == 0 {
		fatSectors = int64(le32(bs[36:]))
	}
	bad := func(format string, args ...any) (*fat, error) {
		return nil, fmt.Errorf("FAT boot sector: "+format, args...)
	}
	switch {
	case bytesPerSector != 512 && bytesPerSector != 1024 && bytesPerSector != 2048 && bytesPerSector != 4096:
		return bad("%d bytes per sector (512, 1024, 2048 or 4096)", bytesPerSector)
	case sectorsPerCluster == 0 || sectorsPerCluster&(sectorsPerCluster-1) != 0 || sectorsPerCluster*bytesPerSector > 64<<10:
		return bad("%d sectors per cluster of %d bytes", sectorsPerCluster, bytesPerSector)
	case reserved == 0 || numFATs == 0 || fatSectors == 0 || totalSectors == 0:
		return bad("no reserved sectors, FAT or sectors")
	case totalSectors*bytesPerSector > v.size:
		return bad("%d sectors of %d bytes, more than the %d bytes of the volume", totalSectors, bytesPerSector, v.size)
	}
	rootSectors := (rootEntries*32 + bytesPerSector - 1) / bytesPerSector
	firstData := reserved + numFATs*fatSectors + rootSectors
	if firstData >= totalSectors {
		return bad("no room for data after %d sectors of FATs and root directory", firstData)
	}
	clusters := (totalSectors - firstData) / sectorsPerCluster
	f := &fat{
		v:           v,
		clusterSize: int(sectorsPerCluster * bytesPerSector),
		maxCluster:  uint32(clusters + 1),
		fatOffset:   reserved * bytesPerSector,
		dataOffset:  firstData * bytesPerSector,
		rootOffset:  (reserved + numFATs*fatSectors) * bytesPerSector,
		rootSize:    int(rootEntries * 32),
	}
	// The cluster count, not a label, decides the FAT type (fatgen103).
	labelAt := 43
	switch {
	case clusters < 4085:
		f.typ, f.entryBits, f.endOfChain, f.badCluster = "fat12", 12, 0xFF8, 0xFF7
	case clusters < 65525:
		f.typ, f.entryBits, f.endOfChain, f.badCluster = "fat16", 16, 0xFFF8, 0xFFF7
	default:
		f.typ, f.entryBits, f.endOfChain, f.badCluster = "fat32", 32, 0x0FFFFFF8, 0x0FFFFFF7
		f.rootCluster = le32(bs[44:])
		labelAt = 71
		if rootEntries != 0 || f.rootCluster < 2 || f.rootCluster > f.maxCluster {
			return bad("FAT32 root directory at cluster %d with %d fixed entries", f.rootCluster, rootEntries)
		}
	}
	if f.typ != "fat32" && (rootEntries == 0 || f.rootSize > maxDirBytes) {
		return bad("a fixed root directory of %d entries (1-%d)", rootEntries, maxDirBytes/32)
	}
	if need := (int64(f.maxCluster) + 1) * int64(f.entryBits) / 8; fatSectors*bytesPerSector < need {
		return bad("a FAT of %d bytes for %d clusters", fatSectors*bytesPerSector, clusters)
	}
	if bs[labelAt-5] == 0x29 { // extended boot signature: the label field exists
		f.bootLabel = strings.TrimRight(string(bs[labelAt:labelAt+11]), " ")
	}
	return f, nil
}

// next returns the FAT entry of cluster c.
func (f *fat) next(c uint32) (uint32, error) {
	off := f.fatOffset + int64(c)*int64(f.entryBits)/8
	switch f.entryBits {
	case 12:
		b, err := f.v.read(off, 2)
		if err != nil {
			return 0, err
		}
		if v := uint32(le16(b)); c%2 == 0 {
			return v & 0xFFF, nil
		} else {
			return v >> 4, nil
		}
	case 16:
		b, err := f.v.read(off, 2)
		if err != nil {
			return 0, err
		}
		return uint32(le16(b)), nil
	}
	b, err := f.v.read(off, 4)
	if err != nil {
		return 0, err
	}
	return le32(b) & 0x0FFFFFFF, nil
}

// chain reads the clusters from first on: exactly want of them, or, when
// want is 0, up to the end of the chain but at most limit bytes. A chain
// that leaves the volume, loops or ends early is an error.
func (f *fat) chain(first uint32, want int, limit int) ([]byte, error) {
	maxClusters := want
	if want == 0 {
		maxClusters = limit / f.clusterSize
	}
	out := make([]byte, 0, want*f.clusterSize)
	seen := map[uint32]bool{}
	for c := first; ; {
		if c < 2 || c > f.maxCluster {
			return nil, fmt.Errorf("cluster chain reaches cluster %d, outside 2-%d", c, f.maxCluster)
		}
		if seen[c] {
			return nil, fmt.Errorf("cluster chain loops back to cluster %d", c)
		}
		seen[c] = true
		if len(seen) > maxClusters {
			return nil, fmt.Errorf("directory larger than %d bytes", limit)
		}
		b, err := f.v.read(f.dataOffset+int64(c-2)*int64(f.clusterSize), f.clusterSize)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
		if want > 0 && len(seen) == want {
			return out, nil
		}
		n, err := f.next(c)
		if err != nil {
			return nil, err
		}
		switch {
		case n >= f.endOfChain && want > 0:
			return nil, fmt.Errorf("cluster chain ends after %d clusters; the size needs %d", len(seen), want)
		case n >= f.endOfChain:
			return out, nil
		case n == f.badCluster:
			return nil, fmt.Errorf("cluster chain reaches a cluster marked bad")
		}
		c = n
	}
}

func (f *fat) root() entry {
	return entry{dir: true, loc: f.rootCluster} // loc 0: the fixed FAT12/16 root
}

func (f *fat) readDir(e entry) ([]entry, error) {
	raw, err := f.dirBytes(e)
	if err != nil {
		return nil, err
	}
	entries, _ := parseFATDir(raw)
	return entries, nil
}

func (f *fat) dirBytes(e entry) ([]byte, error) {
	if e.loc == 0 && f.typ != "fat32" {
		return f.v.read(f.rootOffset, f.rootSize)
	}
	return f.chain(e.loc, 0, maxDirBytes)
}

func (f *fat) readFile(e entry) ([]byte, error) {
	if e.size == 0 {
		return []byte{}, nil
	}
	n := int((e.size + int64(f.clusterSize) - 1) / int64(f.clusterSize))
	data, err := f.chain(e.loc, n, 0)
	if err != nil {
		return nil, err
	}
	return data[:e.size], nil
}

func (f *fat) sameName(a, b string) bool { return strings.EqualFold(a, b) }

// label is the volume label entry of the root directory (what mkfs.vfat
// -n and fatlabel write), else the boot sector's copy.
func (f *fat) label() string {
	if raw, err := f.dirBytes(f.root()); err == nil {
		if _, l := parseFATDir(raw); l != "" {
			return l
		}
	}
	return f.bootLabel
}

const (
	attrVolumeLabel = 0x08
	attrDirectory   = 0x10
	attrLongName    = 0x0F
)

// parseFATDir decodes 32-byte directory entries, long (VFAT) names
// included, up to the end mark; it also returns the volume label entry.
func parseFATDir(raw []byte) (entries []entry, label string) {
	var long []uint16 // the long name being assembled, in order
	wantOrd, sum := 0, byte(0)
	for i := 0; i+32 <= len(raw); i += 32 {
		d := raw[i : i+32]
		if d[0] == 0x00 {
			break // no entries after this one
		}
		if d[0] == 0xE5 {
			wantOrd = 0
			continue // deleted
		}
		attr := d[11]
		if attr&0x3F == attrLongName {
			ord := int(d[0] & 0x1F)
			if d[0]&0x40 != 0 { // the last part comes first
				long, wantOrd, sum = make([]uint16, ord*13), ord, d[13]
			}
			if ord == 0 || ord != wantOrd || d[13] != sum || len(long) < ord*13 {
				wantOrd = 0
				continue
			}
			part := long[(ord-1)*13:]
			for j, off := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
				part[j] = le16(d[off:])
			}
			wantOrd--
			continue
		}
		short := d[:11]
		name := shortName(short, d[12])
		if wantOrd == 0 && long != nil && checksum(short) == sum {
			name = longName(long)
		}
		long, wantOrd = nil, 0
		if attr&attrVolumeLabel != 0 {
			if label == "" {
				label = strings.TrimRight(string(short), " ")
			}
			continue
		}
		if name == "." || name == ".." {
			continue
		}
		entries = append(entries, entry{
			name: name,
			dir:  attr&attrDirectory != 0,
			size: int64(le32(d[28:])),
			loc:  uint32(le16(d[20:]))<<16 | uint32(le16(d[26:])),
		})
	}
	return entries, label
}

// shortName is an 8.3 name; flags 0x08 and 0x10 (set by Windows NT and
// Linux) mean the base and the extension are lower case.
func shortName(b []byte, flags byte) string {
	base := strings.TrimRight(string(b[:8]), " ")
	if len(base) > 0 && base[0] == 0x05 {
		base = "\xE5" + base[1:] // 0xE5 as a first byte is stored as 0x05
	}
	ext := strings.TrimRight(string(b[8:11]), " ")
	if flags&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if flags&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func longName(u []uint16) string {
	for i, c := range u {
		if c == 0 || c == 0xFFFF {
			u = u[:i]
			break
		}
	}
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return ucs2(b, binary.LittleEndian)
}

// checksum ties long name entries to their short entry.
func checksum(short []byte) byte {
	var s byte
	for _, c := range short {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}
