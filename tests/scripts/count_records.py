"""spark-submit tests/scripts/count_records.py PATH RECORD_LENGTH

Prints `records=N byte_sum=S master=M executors=E` for a fixed-length record file: a probe that
the Spark cluster reads HDFS.
"""

import sys

from pyspark.sql import SparkSession


def main() -> None:
    path, length = sys.argv[1], int(sys.argv[2])
    spark = SparkSession.builder.appName("tinytags-probe").getOrCreate()
    sc = spark.sparkContext
    records = sc.binaryRecords(path, length)
    count = records.count()
    total = records.map(lambda record: sum(record)).sum()
    # Block managers = the driver plus one per executor.
    executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
    print(f"records={count} byte_sum={total} master={sc.master} executors={executors}")
    spark.stop()


if __name__ == "__main__":
    main()
