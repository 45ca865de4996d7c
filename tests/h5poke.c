// h5poke: edits one value of an HDF5 file in place, to make hostile
// checkpoints for tests/hostile_cli.sh (Debian's hdf5-tools cannot).
//   h5poke FILE /group/tensor VALUE   element 0 of a float dataset := VALUE
//   h5poke FILE @attr VALUE           root attribute := the double VALUE
//   h5poke FILE @attr str:TEXT        root attribute := the string TEXT
// VALUE is read by strtod: "nan", "inf", "-1e30". Exit 0 when done.
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *file) {
    fprintf(stderr, "h5poke: %s: %s\n", file, what);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: h5poke FILE /dataset|@attribute VALUE|str:TEXT\n");
        return 2;
    }
    const char *file = argv[1], *name = argv[2], *value = argv[3];
    hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return fail("cannot open read-write", file);
    int rc = 0;
    if (name[0] == '@') {
        name++;
        if (H5Aexists(f, name) > 0 && H5Adelete(f, name) < 0) rc = fail("cannot delete attribute", file);
        hid_t space = H5Screate(H5S_SCALAR), type, a;
        if (!strncmp(value, "str:", 4)) {
            value += 4;
            type = H5Tcopy(H5T_C_S1);
            H5Tset_size(type, strlen(value) + 1);
            a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
            if (a < 0 || H5Awrite(a, type, value) < 0) rc = fail("cannot write attribute", file);
            H5Tclose(type);
        } else {
            double v = strtod(value, NULL);
            a = H5Acreate2(f, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
            if (a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, &v) < 0) rc = fail("cannot write attribute", file);
        }
        if (a >= 0) H5Aclose(a);
        H5Sclose(space);
    } else {
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
        if (d < 0) {
            H5Fclose(f);
            return fail("no such dataset", file);
        }
        hid_t fs = H5Dget_space(d);
        int rank = H5Sget_simple_extent_ndims(fs);
        hsize_t start[H5S_MAX_RANK] = {0}, one[H5S_MAX_RANK], n = 1;
        for (int k = 0; k < rank; k++) one[k] = 1;
        float v = (float)strtod(value, NULL);
        hid_t ms = H5Screate_simple(1, &n, NULL);
        if (rank < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, one, NULL) < 0 ||
            H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v) < 0)
            rc = fail("cannot write element 0", file);
        H5Sclose(ms);
        H5Sclose(fs);
        H5Dclose(d);
    }
    if (H5Fclose(f) < 0) rc = fail("cannot close", file);
    return rc;
}
