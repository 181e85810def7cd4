package tinytags;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.server.datanode.DataNode;

/**
 * Runs a real HDFS (one NameNode, N DataNodes) on loopback through Hadoop's MiniDFSCluster, with
 * its storage under a persistent base dir: formatted on first start only, so files survive a
 * restart. Prints "READY hdfs://127.0.0.1:PORT webhdfs=http://127.0.0.1:HTTP" once the NameNode
 * has left safe mode.
 *
 * <p>Usage: HdfsLauncher --base DIR [--rpc-port 9000] [--http-port 9870] [--datanodes 1] [--replication 1]
 *
 * <p>With --datanode NAMENODE_URI it runs one more DataNode instead, in its own process (so it can
 * be killed on its own), storing blocks under --base and serving on 127.0.0.1 at --port (data),
 * --http-port and --ipc-port. A NameNode started with --datanodes 0 and --replication 2 plus two
 * such processes is a cluster that survives losing one DataNode; --fast-dead makes the NameNode
 * call a silent DataNode stale after 3 s and dead after about 14 s instead of 10.5 minutes.
 */
public final class HdfsLauncher {

  private HdfsLauncher() {}

  public static void main(String[] args) throws Exception {
    Path base = null;
    int rpcPort = 9000;
    int httpPort = 9870;
    int datanodes = 1;
    int replication = 1;
    String namenode = null;
    int dataPort = 0;
    int ipcPort = 0;
    boolean fastDead = false;
    for (int i = 0; i < args.length; i += 2) {
      if (args[i].equals("--fast-dead")) {
        fastDead = true;
        i -= 1;
        continue;
      }
      if (i + 1 >= args.length) {
        fail(args[i] + " needs a value");
      }
      String value = args[i + 1];
      switch (args[i]) {
        case "--base" -> base = Path.of(value).toAbsolutePath();
        case "--rpc-port" -> rpcPort = Integer.parseInt(value);
        case "--http-port" -> httpPort = Integer.parseInt(value);
        case "--datanodes" -> datanodes = Integer.parseInt(value);
        case "--replication" -> replication = Integer.parseInt(value);
        case "--datanode" -> namenode = value;
        case "--port" -> dataPort = Integer.parseInt(value);
        case "--ipc-port" -> ipcPort = Integer.parseInt(value);
        default -> fail("unknown argument " + args[i]);
      }
    }
    if (base == null) {
      fail("--base is required");
    }
    Files.createDirectories(base);
    if (namenode != null) {
      runDataNode(base, namenode, dataPort, httpPort, ipcPort);
      return;
    }
    Path formatted = base.resolve(".formatted");
    boolean format = !Files.exists(formatted);

    Configuration conf = new Configuration();
    // A development cluster on loopback: no users or permissions, one replica per block.
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setInt("dfs.replication", replication);
    // DataNodes in their own processes register from 127.0.0.1 without a resolvable host name.
    conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);
    if (fastDead) {
      fastFailureDetection(conf);
    }
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
    conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
    conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".hosts", "*");
    conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".groups", "*");
    // Leave safe mode as soon as the DataNodes report, instead of the default 30 s extension.
    conf.setInt("dfs.namenode.safemode.extension", 0);

    MiniDFSCluster cluster = null;
    try {
      cluster =
          new MiniDFSCluster.Builder(conf, new File(base.toString()))
              .nameNodePort(rpcPort)
              .nameNodeHttpPort(httpPort)
              .numDataNodes(datanodes)
              .format(format)
              .manageNameDfsDirs(true)
              .manageDataDfsDirs(true)
              .waitSafeMode(true)
              .build();
      cluster.waitActive();
    } catch (Exception e) {
      if (cluster != null) {
        cluster.shutdown();
      }
      fail("HDFS did not start (rpc 127.0.0.1:" + rpcPort + ", http " + httpPort + "): " + e);
    }
    if (format) {
      Files.writeString(formatted, "formatted by tinytags\n", StandardCharsets.UTF_8);
    }
    final MiniDFSCluster running = cluster;
    Runtime.getRuntime().addShutdownHook(new Thread(() -> running.shutdown(false)));
    System.out.println(
        "READY hdfs://127.0.0.1:"
            + cluster.getNameNodePort()
            + " webhdfs=http://127.0.0.1:"
            + cluster.getNameNode().getHttpAddress().getPort()
            + " datanodes="
            + datanodes
            + (format ? " (formatted)" : " (existing data)"));
    System.out.flush();
    Thread.currentThread().join();
  }

  /** A stale DataNode (silent 3 s) is read from and written to last; a dead one (about 14 s) is dropped. */
  private static void fastFailureDetection(Configuration conf) {
    conf.setLong("dfs.heartbeat.interval", 1);
    conf.setInt("dfs.namenode.heartbeat.recheck-interval", 2000);
    conf.setLong("dfs.namenode.stale.datanode.interval", 3000);
    conf.setBoolean("dfs.namenode.avoid.read.stale.datanode", true);
    conf.setBoolean("dfs.namenode.avoid.write.stale.datanode", true);
    // With two DataNodes there is no third to replace one lost from a write pipeline: go on with one.
    conf.setBoolean("dfs.client.block.write.replace-datanode-on-failure.enable", false);
  }

  private static void runDataNode(Path base, String namenode, int dataPort, int httpPort, int ipcPort)
      throws Exception {
    Configuration conf = new HdfsConfiguration();
    conf.set("fs.defaultFS", namenode);
    conf.set("dfs.datanode.data.dir", base.resolve("data").toUri().toString());
    conf.set("dfs.datanode.address", "127.0.0.1:" + dataPort);
    conf.set("dfs.datanode.http.address", "127.0.0.1:" + httpPort);
    conf.set("dfs.datanode.ipc.address", "127.0.0.1:" + ipcPort);
    conf.set("dfs.datanode.hostname", "127.0.0.1");
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    fastFailureDetection(conf);
    DataNode node = DataNode.createDataNode(new String[0], conf);
    if (node == null) {
      fail("DataNode did not start (namenode " + namenode + ")");
    }
    System.out.println("READY datanode " + namenode + " data 127.0.0.1:" + dataPort + " http " + httpPort);
    System.out.flush();
    Thread.currentThread().join();  // the DataNode runs in its own threads until the process is killed
  }

  private static void fail(String message) {
    System.err.println("ERROR hdfs launcher: " + message);
    System.exit(1);
  }
}
