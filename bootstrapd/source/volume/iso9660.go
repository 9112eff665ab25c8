package volume

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// iso9660 is an ISO9660 volume (ECMA-119). Names come from Rock Ridge when
// the volume has it (cloud-localds and kubeboot cidata write it; it also
// tells symbolic links apart), else from the Joliet tree, else from the
// plain ISO9660 names without their ";1" version.
type iso9660 struct {
	v         *bounded
	blockSize int64
	rootRec   entry
	rock      bool // names and types from Rock Ridge (SUSP in the primary tree)
	suspSkip  int  // bytes to skip at the start of each system use area
	joliet    bool
}

const (
	isoSector = 2048 // volume descriptors always sit in 2048-byte sectors
	// maxDescriptors bounds the volume descriptor set.
	maxDescriptors = 64
	// maxSUSP bounds the system use data of one entry, continuation
	// areas included, and maxContinuations their number.
	maxSUSP          = 64 << 10
	maxContinuations = 8
)

func openISO9660(v *bounded) (*iso9660, string, error) {
	var primary, joliet []byte
	for i := int64(0); i < maxDescriptors; i++ {
		d, err := v.read((16+i)*isoSector, isoSector)
		if err != nil || string(d[1:6]) != "CD001" {
			if i == 0 {
				return nil, "", errNotThisFormat
			}
			return nil, "", fmt.Errorf("ISO9660: volume descriptor %d is missing or broken", 16+i)
		}
		if d[0] == 255 {
			break // set terminator
		}
		switch esc := string(d[88:91]); {
		case d[0] == 1 && primary == nil:
			primary = d
		case d[0] == 2 && joliet == nil && (esc == "%/@" || esc == "%/C" || esc == "%/E"):
			joliet = d
		}
		if i == maxDescriptors-1 {
			return nil, "", fmt.Errorf("ISO9660: more than %d volume descriptors", maxDescriptors)
		}
	}
	if primary == nil {
		return nil, "", fmt.Errorf("ISO9660: no primary volume descriptor")
	}
	iso := &iso9660{v: v, blockSize: int64(le16(primary[128:]))}
	if bs := iso.blockSize; bs != 512 && bs != 1024 && bs != 2048 {
		return nil, "", fmt.Errorf("ISO9660: logical block size %d (512, 1024 or 2048)", bs)
	}
	label := strings.TrimRight(string(primary[40:72]), " \x00")

	root, err := iso.record(primary[156:190])
	if err != nil || !root.dir {
		return nil, "", fmt.Errorf("ISO9660: the primary root directory record is broken")
	}
	// Rock Ridge announces itself by an SP entry in the root's "." record.
	raw, err := iso.dirBytes(root)
	if err != nil {
		return nil, "", fmt.Errorf("ISO9660: root directory: %w", err)
	}
	if n := int(raw[0]); n >= 34 && n <= len(raw) {
		if su := systemUse(raw[:n]); len(su) >= 7 && string(su[:2]) == "SP" && su[4] == 0xBE && su[5] == 0xEF {
			iso.rock, iso.suspSkip = true, int(su[6])
		}
	}
	iso.rootRec = root
	if !iso.rock && joliet != nil {
		if jr, err := iso.record(joliet[156:190]); err == nil && jr.dir {
			iso.rootRec, iso.joliet = jr, true
		}
	}
	return iso, label, nil
}

func (iso *iso9660) root() entry { return iso.rootRec }

// record decodes one directory record without its name.
func (iso *iso9660) record(r []byte) (entry, error) {
	if len(r) < 34 || int(r[0]) < 33+int(r[32]) || int(r[0]) > len(r) {
		return entry{}, fmt.Errorf("directory record of %d bytes is broken", len(r))
	}
	flags := r[25]
	if flags&0x80 != 0 {
		return entry{}, fmt.Errorf("multi-extent files are not supported")
	}
	if r[26] != 0 || r[27] != 0 {
		return entry{}, fmt.Errorf("interleaved files are not supported")
	}
	return entry{
		dir:  flags&0x02 != 0,
		size: int64(le32(r[10:])),
		loc:  le32(r[2:]) + uint32(r[1]), // data follows the extended attribute record
	}, nil
}

func (iso *iso9660) extent(e entry) (int64, error) {
	off := int64(e.loc) * iso.blockSize
	if off > iso.v.size || e.size > iso.v.size-off {
		return 0, fmt.Errorf("the volume says %d bytes at block %d, past its end (%d bytes)", e.size, e.loc, iso.v.size)
	}
	return off, nil
}

func (iso *iso9660) dirBytes(e entry) ([]byte, error) {
	if e.size > maxDirBytes || e.size < 34 {
		return nil, fmt.Errorf("directory of %d bytes (34-%d)", e.size, maxDirBytes)
	}
	off, err := iso.extent(e)
	if err != nil {
		return nil, err
	}
	return iso.v.read(off, int(e.size))
}

func (iso *iso9660) readDir(e entry) ([]entry, error) {
	raw, err := iso.dirBytes(e)
	if err != nil {
		return nil, err
	}
	var out []entry
	for i := 0; i < len(raw); {
		n := int(raw[i])
		if n == 0 { // records do not cross sectors: the rest of this one is padding
			i = (i/isoSector + 1) * isoSector
			continue
		}
		if i+n > len(raw) {
			break
		}
		r := raw[i : i+n]
		i += n
		if n < 34 || int(r[32]) == 0 || 33+int(r[32]) > n {
			continue
		}
		if rawName := r[33 : 33+int(r[32])]; len(rawName) == 1 && rawName[0] <= 1 {
			continue // "." and ".."
		}
		ent, err := iso.record(r)
		if err != nil {
			ent.unreadable = err // named if it is asked for
		}
		ent.name = iso.name(r)
		if iso.rock {
			if err := iso.rockRidge(r, &ent); err != nil {
				return nil, err
			}
		}
		out = append(out, ent)
	}
	return out, nil
}

func (iso *iso9660) name(r []byte) string {
	raw := r[33 : 33+int(r[32])]
	var n string
	if iso.joliet {
		n = ucs2(raw, binary.BigEndian)
	} else {
		n = string(raw)
	}
	if i := strings.LastIndexByte(n, ';'); i >= 0 {
		n = n[:i]
	}
	if !iso.joliet {
		n = strings.TrimSuffix(n, ".")
	}
	return n
}

// systemUse is the System Use area of a record: after the name, padded to
// an even offset.
func systemUse(r []byte) []byte {
	start := 33 + int(r[32])
	if start%2 == 1 {
		start++
	}
	if start >= len(r) {
		return nil
	}
	return r[start:]
}

// rockRidge applies the NM (name), PX (mode) and SL (symbolic link)
// entries of a record, following continuation areas within the bounds.
func (iso *iso9660) rockRidge(r []byte, e *entry) error {
	su := systemUse(r)
	if len(su) < iso.suspSkip {
		return nil
	}
	area := su[iso.suspSkip:]
	var name []byte
	hasName, total := false, 0
	for hops := 0; ; hops++ {
		total += len(area)
		if total > maxSUSP {
			return fmt.Errorf("%s: Rock Ridge entries longer than %d bytes", e.name, maxSUSP)
		}
		var next []byte
		for len(area) >= 4 {
			sig, n := string(area[:2]), int(area[2])
			if n < 4 || n > len(area) {
				break
			}
			body := area[4:n]
			switch {
			case sig == "ST":
				area = nil
				continue
			case sig == "NM" && len(body) >= 1 && body[0]&0x06 == 0:
				name, hasName = append(name, body[1:]...), true
			case sig == "PX" && len(body) >= 4:
				switch le32(body) & 0o170000 {
				case 0o120000:
					e.symlink = true
				case 0o040000:
					e.dir = true
				}
			case sig == "SL":
				e.symlink = true
			case sig == "CE" && len(body) >= 24:
				block, off, length := int64(le32(body)), int64(le32(body[8:])), int64(le32(body[16:]))
				if hops >= maxContinuations || length > maxSUSP {
					return fmt.Errorf("%s: too many or too long Rock Ridge continuation areas", e.name)
				}
				b, err := iso.v.read(block*iso.blockSize+off, int(length))
				if err != nil {
					return fmt.Errorf("%s: Rock Ridge continuation area: %w", e.name, err)
				}
				next = b
			}
			area = area[n:]
		}
		if next == nil {
			break
		}
		area = next
	}
	if hasName {
		e.name = string(name)
	}
	return nil
}

func (iso *iso9660) readFile(e entry) ([]byte, error) {
	off, err := iso.extent(e)
	if err != nil {
		return nil, err
	}
	return iso.v.read(off, int(e.size))
}

func (iso *iso9660) sameName(a, b string) bool {
	if iso.rock || iso.joliet {
		return a == b
	}
	return strings.EqualFold(a, b) // plain ISO9660 names are upper case
}
