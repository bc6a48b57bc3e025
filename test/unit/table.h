/*
 * table.h — table-driven cmocka tests: check every row, report each failing row, and fail
 * the test once at the end with the count, so one run shows all broken rows of a table.
 * Include after <cmocka.h>; each test program has its own counter.
 */
#ifndef POPBSMTP_TEST_TABLE_H
#define POPBSMTP_TEST_TABLE_H

static int bad_rows;

/* Record one failed row without stopping the table. */
#define ROW_CHECK(cond, ...)                                                                       \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			print_error(__VA_ARGS__);                                                  \
			print_error("\n");                                                         \
			bad_rows++;                                                                \
		}                                                                                  \
	} while (0)

/* End of a table: fail if any row of it failed. */
static void table_done(const char *table)
{
	int n = bad_rows;

	bad_rows = 0;
	if (n != 0)
		fail_msg("%d row(s) of %s failed", n, table);
}

#endif
